"""Pure Flax linen modules. They know nothing about training."""
