"""Creates a container in Azurite (the Azure Storage emulator) with the
official Azure SDK, as a team's set-up would; the emulator's well-known
development account and key (public, not a secret).

  azure_container.py BLOB_ENDPOINT CONTAINER"""

import sys

from azure.storage.blob import BlobServiceClient

# Azurite's documented development storage account.
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def main() -> None:
    endpoint, container = sys.argv[1], sys.argv[2]
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint={endpoint}/{ACCOUNT};"
    )
    BlobServiceClient.from_connection_string(connection).create_container(container)
    print(f'{{"container": "{container}"}}')


if __name__ == "__main__":
    main()
