"""What arrives: Alertmanager's webhook notifications parsed and validated, and the rules by
which received alerts become episodes."""
