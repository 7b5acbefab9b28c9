"""The cheese farm: unary Order, after a simulated preparation."""
