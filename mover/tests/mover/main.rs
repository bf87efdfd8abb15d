//! The mover end to end over loopback: a server and a client in one process, temp files for
//! devices.

mod block;
mod copy;
mod faults;
mod refusals;
mod support;
