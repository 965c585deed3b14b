//! memcached decoder tests.
