"""Meta-learning algorithms. Each is one module and one config file in ``conf/algo/``."""
