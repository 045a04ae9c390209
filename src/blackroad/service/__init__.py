"""Services between the HTTP surfaces and the engines: what a request is for."""
