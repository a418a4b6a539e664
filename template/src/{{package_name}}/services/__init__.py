"""The service's logic, independent of HTTP and of the database backend."""
