//! What the slot tests stand up around a slot: a namespace standing in for
//! the guest behind its tap, one standing in for the internet, the host
//! table, and ways to run code and open sockets inside namespaces.

pub mod guest;
pub mod internet;
pub mod netns;
pub mod tap;
pub mod tcp;
pub mod tracked;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;
