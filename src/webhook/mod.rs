//! Webhooks at the edge: what a Standard Webhooks sender needs that is not a
//! use case. [`secret`] makes endpoint secrets (`whsec_…`) and signs a
//! delivery with them; [`address`] says which network addresses a delivery
//! may reach; [`url`] which endpoint URLs are taken. It imports nothing
//! above it: the endpoints' use cases (`gate::webhooks`) and the delivery
//! worker (`gate::delivery`) use it.

pub mod address;
pub mod secret;
pub mod url;
