"""prodstack's Pulumi program: config loading/validation, sizes and the composition."""
