//! Member list.
