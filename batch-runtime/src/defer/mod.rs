//! Work that runs after the response has been sent.
