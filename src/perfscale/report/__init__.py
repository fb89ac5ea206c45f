"""The present layer: JSON documents and Rich tables for people."""
