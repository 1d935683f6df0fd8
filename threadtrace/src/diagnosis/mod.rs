//! Why a thread could not be created: which limit, from evidence, where
//! that limit came from, who holds the threads, and what to do.
pub mod cause;
pub mod evidence;
pub mod findings;
pub mod growth;
pub mod headroom;
pub mod holders;
pub mod limits;
pub mod memory;
pub mod oom;
pub mod oom_group;
pub mod oversubscription;
pub mod remedy;
pub mod share;
pub mod storm;

pub use cause::decide;
