//! UDP transport.
