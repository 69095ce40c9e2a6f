//! Expansion snapshot: the generated code, parsed by syn and printed by
//! prettyplease, so a change to it is reviewed as readable Rust.
