"""Device drivers: each opens a transport and turns a `protocols` session into readings."""
