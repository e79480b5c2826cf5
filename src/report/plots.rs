//! PNG plots (to be written).
