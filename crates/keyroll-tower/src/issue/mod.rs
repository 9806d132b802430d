//! issue (under construction)
