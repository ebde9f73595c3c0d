//! The storage conformance suite: the same cases, stamped out per backend by
//! [`store_test_suite!`] (after Quickwit's `metastore_test_suite!`).
//!
//! SQLite always runs, on a temp file per test. PostgreSQL runs whenever the test
//! database answers (`TESSERA_TEST_DATABASE_URL`, else the local default; see
//! [`crate::test_database`]), each test in a fresh `tessera_test_<uuid>` schema dropped
//! afterwards; otherwise its tests print that they were skipped, unless
//! `TESSERA_REQUIRE_POSTGRES=1`, which makes them fail.

mod api_keys;
mod challenges;
mod emergency;
mod events;
mod fixture;
mod keys;
mod one_time_tokens;
mod opaque_tokens;
mod rate_limits;
mod records;
mod replicas;
mod secrets;
mod sessions;

/// Stamps out one `#[tokio::test]` per case for a backend, each on a fresh fixture.
macro_rules! store_test_suite {
    ($backend:ident, $fixture:path) => {
        store_test_suite!(@cases $backend, $fixture, [
            keys::{
                key_round_trip_keeps_every_field,
                commit_keys_bumps_generation_and_refuses_a_stale_one,
                concurrent_commits_with_one_generation_let_exactly_one_win,
            },
            events::{
                events_get_consecutive_revisions_in_order,
                latest_and_oldest_revisions_follow_appends_and_pruning,
                change_signal_fires_after_a_local_commit,
            },
            records::{
                audit_entries_chain_their_hashes,
                concurrent_audit_appends_form_one_chain,
                audit_pages_run_newest_first_and_after_runs_oldest_first,
                audit_log_rejects_update_and_delete,
                clients_insert_get_list_disable,
                meta_put_if_absent_keeps_the_first_value,
                a_reopened_store_sees_the_same_state,
                audit_rows_written_before_typed_actions_chain_with_new_ones,
            },
            emergency::{
                an_emergency_commit_records_its_incident_with_its_effects_once,
                a_failed_emergency_commit_leaves_nothing_and_its_retry_applies,
                each_kind_of_refused_write_has_its_own_error,
                concurrent_commits_of_one_incident_apply_exactly_once,
            },
            sessions::{
                session_and_token_round_trip_keeps_every_field,
                refresh_context_reads_token_session_and_successor,
                rotation_marks_the_old_token_and_inserts_the_successor,
                concurrent_rotations_let_exactly_one_win,
                rotation_is_refused_when_the_session_is_revoked,
                revoke_effects_end_exactly_the_selected_sessions,
                session_and_family_revocations_stay_in_their_tenant,
                revoke_publishes_entries_events_and_audit,
                prune_revocations_drops_only_expired_entries,
                change_signal_fires_after_revoke,
            },
            api_keys::{
                api_keys_round_trip_and_list_by_tenant,
                api_key_rotation_is_conditional,
                concurrent_api_key_rotations_make_exactly_one_successor,
                api_key_revocation_is_conditional,
                api_key_expiring_and_expiry_happen_once,
                api_key_usage_batches_add_up,
            },
            rate_limits::{
                leases_charge_every_window_and_a_new_window_restarts,
                concurrent_leases_from_two_stores_never_charge_past_the_limit,
                rate_limits_are_replaced_only_on_a_working_key,
                a_key_written_without_limits_has_the_default_limits,
            },
            secrets::{
                secrets_round_trip_and_commits_check_the_generation,
                concurrent_secret_commits_from_two_stores_let_exactly_one_win,
            },
            opaque_tokens::{
                opaque_tokens_round_trip_and_identities_by_tenant,
                service_token_insert_checks_identity_and_predecessor,
                concurrent_confirmations_revoke_the_predecessor_exactly_once,
                the_sweep_marks_expired_tokens_and_deletes_old_rows,
                an_emergency_deactivates_one_tenants_standing_credentials,
            },
            challenges::{
                challenges_round_trip_count_attempts_and_verify_once,
                concurrent_attempts_from_two_stores_count_exactly_the_limit,
                rate_windows_charge_each_call_once_and_restart,
                invalidation_pruning_and_provider_states,
            },
            one_time_tokens::{
                one_time_tokens_round_trip_and_consume_once,
                concurrent_consumptions_from_two_stores_let_exactly_one_win,
                resets_supersede_and_emergencies_invalidate,
                confirmation_pairs_are_consumed_together,
                a_completed_reset_records_the_password_change_once,
                pruning_and_settings,
            },
        ]);
    };
    (@cases $backend:ident, $fixture:path, [$($group:ident::{$($case:ident),* $(,)?}),* $(,)?]) => {
        mod $backend {
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(fixture) = $fixture().await else {
                        return;
                    };
                    super::$group::$case(&fixture).await;
                }
            )*)*
        }
    };
}

store_test_suite!(sqlite, crate::store_suite::fixture::sqlite);
store_test_suite!(postgres, crate::store_suite::fixture::postgres);
store_test_suite!(@cases postgres_replicas, crate::store_suite::fixture::postgres, [
    replicas::{
        a_commit_on_one_replica_wakes_the_other,
        concurrent_appends_from_two_replicas_leave_no_gaps,
        replicas_starting_together_migrate_once,
        tls_refuses_a_server_the_ca_did_not_sign,
        the_listener_reconnects_after_its_connection_drops,
    },
]);
