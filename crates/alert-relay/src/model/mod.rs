//! The pure model: what the store records, the writes that change it, and the storm and budget
//! rules. No I/O and nothing above it: config, store, render and the services all build on
//! these types (payload, matcher, time, secret and rotation are the model's other modules).

pub mod budget;
pub mod console;
pub mod maintenance;
pub mod record;
pub mod storm;
