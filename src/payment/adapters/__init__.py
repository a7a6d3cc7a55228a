"""Everything around the domain: stores, settings, the embedded database, the clock."""
