"""The PostgreSQL implementation of the store interface (`server.db: postgresql://...`), for
several bridge replicas behind Alertmanager HA sharing one database."""
