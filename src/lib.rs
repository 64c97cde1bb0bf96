//! offload: run heavy work in separate processor processes while a GLib main loop stays free.
pub use offload_sdk as sdk;
