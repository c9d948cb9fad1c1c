//! The diesel schema, shared by both backends (the migrations in
//! `migrations/sqlite` and `migrations/postgres` create the same columns).

diesel::table! {
    ledger_head (id) {
        id -> Integer,
        seq -> BigInt,
        hash -> Text,
        catalog_version -> BigInt,
    }
}

diesel::table! {
    resellers (id) {
        id -> Text,
        spec -> Text,
        updated_at -> Text,
    }
}

diesel::table! {
    organizations (id) {
        id -> Text,
        spec -> Text,
        updated_at -> Text,
    }
}

diesel::table! {
    relationships (source, target) {
        source -> Text,
        target -> Text,
        kind -> Text,
        updated_at -> Text,
    }
}

diesel::table! {
    products (sku) {
        sku -> Text,
        spec -> Text,
        updated_at -> Text,
    }
}

diesel::table! {
    designations (id) {
        id -> Text,
        spec -> Text,
        updated_at -> Text,
    }
}

diesel::table! {
    decisions (id) {
        id -> Text,
        reseller -> Text,
        transaction_kind -> Text,
        outcome -> Text,
        body -> Text,
        audit_seq -> BigInt,
        created_at -> Text,
        request -> Nullable<Text>,
        review_status -> Nullable<Text>,
        review -> Nullable<Text>,
    }
}

diesel::table! {
    audit_events (seq) {
        seq -> BigInt,
        id -> Text,
        at -> Text,
        action -> Text,
        outcome -> Nullable<Text>,
        reseller -> Nullable<Text>,
        event -> Text,
        prev_hash -> Text,
        hash -> Text,
        what_if -> Bool,
    }
}

diesel::table! {
    licenses (id) {
        id -> Text,
        reseller -> Text,
        product -> Text,
        customer -> Text,
        seats -> BigInt,
        starts_at -> Text,
        expires_at -> Text,
        decision_id -> Text,
        token -> Text,
        created_at -> Text,
        updated_at -> Text,
    }
}

diesel::table! {
    idempotency_keys (reseller, idem_key) {
        reseller -> Text,
        idem_key -> Text,
        fingerprint -> Text,
        status -> Integer,
        body -> Text,
        created_at -> Text,
        expires_at -> Text,
    }
}

diesel::table! {
    license_keys (kid) {
        kid -> Text,
        jwk -> Text,
        created_at -> Text,
    }
}

diesel::table! {
    audit_checkpoints (seq) {
        seq -> BigInt,
        hash -> Text,
        at -> Text,
        kid -> Text,
        signature -> Text,
    }
}

diesel::table! {
    /// diesel's own record of the migrations applied (read, never written here).
    __diesel_schema_migrations (version) {
        version -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    audit_checkpoints,
    ledger_head,
    licenses,
    idempotency_keys,
    license_keys,
    resellers,
    organizations,
    relationships,
    products,
    designations,
    decisions,
    audit_events,
);
