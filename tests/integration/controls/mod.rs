//! The controls requests-cache users expect (issue #4): expiry settings and their precedence,
//! modes, filters, keys, what callers see, and the anchors' known faults.

mod expiry;
mod filters;
mod keys;
mod modes;
mod reporting;
