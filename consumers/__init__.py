"""Consumers: the Faust agents (commands -> Dastra), the hook dispatcher and the lag monitor."""
