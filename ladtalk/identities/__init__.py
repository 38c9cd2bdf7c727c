"""The identity store ($LADTALK_HOME/identities and the shipped ones), the typed meta.json,
and publishing an identity to the Hub."""
