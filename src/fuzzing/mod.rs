//! The ways in for fuzz targets (`fuzz/`) and the stable fuzz loops (`tests/fuzz_*.rs`): each
//! function takes what an outsider sends, as bytes, and runs it through the same parse and
//! validate functions the daemon's handlers call, with no node, socket or state behind them.
//! Nothing here is for anything else.

pub mod api;
