//! Machine unit tests.
