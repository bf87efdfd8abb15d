//! Test doubles and helpers shared by HwameiStor's tests. Only ever a dev-dependency: no
//! shipped binary contains a fake.
