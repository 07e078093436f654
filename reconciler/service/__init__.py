"""The service layer: a session plans and applies against one target, the Applier carries out a plan."""
