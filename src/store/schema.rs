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
        status -> Text,
        status_reason -> Nullable<Text>,
        ended_by -> Nullable<Text>,
        renewal_blocked -> Nullable<Text>,
        impact_review -> Nullable<Text>,
        status_idx -> Nullable<BigInt>,
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
        audit_seq -> Nullable<BigInt>,
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
    impact_runs (id) {
        id -> Text,
        trigger_key -> Text,
        trigger_spec -> Text,
        at -> Text,
        reach -> Text,
        status -> Text,
        cursor -> Text,
        licenses_checked -> BigInt,
        ended -> BigInt,
        capped -> BigInt,
        renewal_blocked -> BigInt,
        review -> BigInt,
        completed_at -> Nullable<Text>,
        audit_seq -> BigInt,
    }
}

diesel::table! {
    impact_actions (run_id, license_id) {
        run_id -> Text,
        license_id -> Text,
        reseller -> Text,
        product -> Text,
        action -> Text,
        not_after -> Nullable<Text>,
        decision_id -> Text,
        audit_seq -> BigInt,
    }
}

diesel::table! {
    impact_clock (id) {
        id -> Integer,
        swept_to -> Text,
    }
}

diesel::table! {
    events (seq) {
        seq -> BigInt,
        id -> Text,
        event_type -> Text,
        reseller -> Nullable<Text>,
        created_at -> Text,
        audit_seq -> BigInt,
    }
}

diesel::table! {
    outbox_start (id) {
        id -> Integer,
        audit_seq -> BigInt,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> Text,
        reseller -> Nullable<Text>,
        url -> Text,
        event_types -> Nullable<Text>,
        secret -> Text,
        previous_secret -> Nullable<Text>,
        previous_until -> Nullable<Text>,
        created_at -> Text,
        disabled_at -> Nullable<Text>,
        disabled_reason -> Nullable<Text>,
        cursor -> BigInt,
        attempts -> Integer,
        next_attempt_at -> Nullable<Text>,
        last_attempt_at -> Nullable<Text>,
        last_status -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Text>,
    }
}

diesel::table! {
    webhook_deliveries (endpoint_id, event_seq) {
        endpoint_id -> Text,
        event_seq -> BigInt,
        event_id -> Text,
        outcome -> Text,
        attempts -> Integer,
        status -> Nullable<Integer>,
        settled_at -> Text,
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
    impact_runs,
    impact_actions,
    impact_clock,
    events,
    outbox_start,
    webhook_endpoints,
    webhook_deliveries,
);
