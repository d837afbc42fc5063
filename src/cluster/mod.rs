//! Cluster mode: what moves messages between nodes over Redis and tells the server which nodes
//! are alive. Never routes a peer's message itself (the bridge and the router do).
pub(crate) mod bridge;
pub(crate) mod link;
pub(crate) mod link_task;
#[cfg(test)]
mod link_task_tests;
#[cfg(test)]
mod link_tests;
#[cfg(test)]
pub(crate) mod test_redis;
