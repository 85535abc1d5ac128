//! shoal-testkit: what shoal's tests and benchmarks need to build and serve images and to
//! run daemons under test. Never linked into the `shoal` binary.
