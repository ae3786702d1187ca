"""The demo billing engine: a stand-in for the merchant's own billing system (customers,
subscriptions, invoices, transactions in a SQL database, plus a deterministic payment gateway)."""
