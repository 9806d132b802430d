//! keyroll
