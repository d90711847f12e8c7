//! The vocabulary every stage shares, at the bottom of the crate: it imports nothing above the
//! model. The probe protocol ([`records`]), the plan's steps and changes ([`step`]), what plumb
//! manages on a host ([`state`]) and what a planner sees ([`cx`]). Kinds speak it; the stage
//! drivers (probe, plan, apply, report) move it around.

pub mod cx;
pub mod records;
pub mod state;
pub mod step;
