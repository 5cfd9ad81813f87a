"""AWS simulator for cms.patching tests: moto server mode plus patched EC2/SSM behaviour."""
