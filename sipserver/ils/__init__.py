"""The ILS side: the interface every backend implements, the factory that builds one, and the backends."""
