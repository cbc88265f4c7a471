//! What the fake storage servers share (GCS and S3): test bodies, a fault
//! injecting proxy, and a counting proxy.

pub mod bodies;
pub mod faults;
pub mod proxy;
