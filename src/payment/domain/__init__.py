"""The inside of the hexagon: the payment rules, in the standard library only."""
