"""The payment service: pays for an order exactly once."""
