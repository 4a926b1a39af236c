//! Simulated SIP peers for tests and `pointsman drill`.
