"""prodstack's Pulumi components: one module per building block of the AWS stack.

Each module holds a frozen ``XArgs`` dataclass (every field documented with its
meaning, valid values and ``Default:``) and one ``pulumi.ComponentResource``
with the type token ``prodstack:<module>:<Class>``. ``stacks/`` composes them.
"""
