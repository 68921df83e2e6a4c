"""District edge gateway: validate device messages, de-duplicate, batch readings into frames."""
