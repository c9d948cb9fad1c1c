//! The snapshot API: what a built [`Catalog`] answers besides decisions.

use super::*;
use crate::domain::ResellerId;

#[test]
fn unknown_product_is_an_error() {
    let catalog = build(world());
    let req = Request {
        transaction: ISSUE,
        product: sku("NO-SUCH-SKU"),
        customer: party("US", None),
        reseller: party("US", Some(true)),
    };
    assert_eq!(
        decide(&catalog, &req, t(LATER)),
        Err(UnknownProduct(sku("NO-SUCH-SKU")))
    );
    let empty = Catalog::build(0, CatalogData::default()).unwrap();
    assert_eq!(
        decide(&empty, &req, t(LATER)).unwrap_err().to_string(),
        "unknown product NO-SUCH-SKU"
    );
}

#[test]
fn catalog_is_shareable_and_exposes_its_data() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Catalog>();
    let mut data = world();
    data.resellers.insert(
        ResellerId::parse("acme").unwrap(),
        ResellerSpec {
            name: "Acme Resale".into(),
            country: cc("US"),
            us_person: true,
        },
    );
    let catalog = Catalog::build(42, data.clone()).unwrap();
    assert_eq!(catalog.version(), 42);
    assert_eq!(catalog.data(), &data);
    assert_eq!(
        catalog.product(&sku("KAV")).unwrap().vendor,
        org("kaspersky-lab-inc")
    );
    assert!(catalog.product(&sku("NOPE")).is_none());
    assert_eq!(
        catalog
            .reseller(&ResellerId::parse("acme").unwrap())
            .unwrap()
            .name,
        "Acme Resale"
    );
    assert!(catalog
        .reseller(&ResellerId::parse("other").unwrap())
        .is_none());
    assert!(catalog.designation(&did(KASPERSKY)).is_some());
    assert!(catalog.organization(&org("sub3")).is_some());
}
