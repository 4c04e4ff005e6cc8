// The app's secret settings, written into Key Vault by the deployment (through the control plane) so no
// secret passes through an app setting, a parameter file or an output.
param vaultName string

@description('Backups storage account; its connection string is stored only while shared keys are allowed.')
param backupStorageAccountName string
param backupStorageSharedKey bool

param outgoingTopicName string

param controlHost string
param controlDatabase string
param postgresAdminLogin string

@secure()
param postgresAdminPassword string

param storageConnectionSecretName string = 'storage-connection'
param controlDsnSecretName string = 'control-dsn'
param eventGridTopicKeySecretName string = 'eventgrid-topic-key'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource backupStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: backupStorageAccountName
}

resource outgoing 'Microsoft.EventGrid/topics@2024-06-01-preview' existing = {
  name: outgoingTopicName
}

resource storageConnection 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (backupStorageSharedKey) {
  parent: vault
  name: storageConnectionSecretName
  properties: {
    contentType: 'Azure Storage connection string'
    value: 'DefaultEndpointsProtocol=https;AccountName=${backupStorage.name};AccountKey=${backupStorage.listKeys().keys[0].value};EndpointSuffix=${environment().suffixes.storage}'
  }
}

resource controlDsn 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: controlDsnSecretName
  properties: {
    contentType: 'libpq connection string'
    value: 'host=${controlHost} port=5432 dbname=${controlDatabase} user=${postgresAdminLogin} password=${postgresAdminPassword} sslmode=verify-full sslrootcert=system'
  }
}

resource topicKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: eventGridTopicKeySecretName
  properties: {
    contentType: 'Event Grid topic access key'
    value: outgoing.listKeys().key1
  }
}
