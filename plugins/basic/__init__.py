"""Small general-purpose tasks: arithmetic, collections, timing, and deliberate failure.

They make the bundled examples, tests and benchmarks runnable without the ML stack.
"""
