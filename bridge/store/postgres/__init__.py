"""The PostgreSQL implementation of the store interface (`store.url: postgresql://...`), for
several bridge replicas behind Alertmanager HA sharing one database."""
