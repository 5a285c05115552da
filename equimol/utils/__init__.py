"""Small shared utilities (dtype handling, machine description)."""
