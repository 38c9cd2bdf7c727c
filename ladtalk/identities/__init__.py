"""The identity store ($LADTALK_HOME/identities and the shipped ones), the typed meta.json,
owners and access on a public app (``owners``), and publishing an identity to the Hub."""
