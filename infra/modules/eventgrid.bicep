// Event Grid topics: a system topic on the backups storage account (BlobCreated), a custom topic for the
// control plane's outgoing CloudEvents, and a custom topic the backup jobs publish "backup failed"
// events to. Each topic's identity may write dead letters into one container. The subscriptions to the
// Function App are in eventgrid-subscriptions.bicep: they need the app's functions to exist.
param location string

param systemTopicName string
param outgoingTopicName string
param backupJobsTopicName string

@description('The backups storage account (source of BlobCreated, home of the dead-letter container).')
param storageAccountName string

param deadLetterContainer string = 'eventgrid-deadletter'

param tags object = {}

var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetter 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainer
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' = {
  name: systemTopicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// The system topic writes dead letters with its identity, to that one container only.
resource systemTopicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetter.id, systemTopic.id, storageBlobDataContributor)
  scope: deadLetter
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: systemTopic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource outgoing 'Microsoft.EventGrid/topics@2024-06-01-preview' = {
  name: outgoingTopicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    minimumTlsVersionAllowed: '1.2'
    publicNetworkAccess: 'Enabled'
    // The publisher still authenticates with the topic key (from Key Vault); the app's identity also holds
    // EventGrid Data Sender so local auth can be disabled once the publisher uses it.
    disableLocalAuth: false
  }
}

resource backupJobs 'Microsoft.EventGrid/topics@2024-06-01-preview' = {
  name: backupJobsTopicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'EventGridSchema'
    minimumTlsVersionAllowed: '1.2'
    publicNetworkAccess: 'Enabled'
    disableLocalAuth: true
  }
}

resource backupJobsDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetter.id, backupJobs.id, storageBlobDataContributor)
  scope: deadLetter
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: backupJobs.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output systemTopicId string = systemTopic.id
output outgoingTopicId string = outgoing.id
output outgoingTopicName string = outgoing.name
output outgoingTopicEndpoint string = outgoing.properties.endpoint
output backupJobsTopicId string = backupJobs.id
output backupJobsTopicEndpoint string = backupJobs.properties.endpoint
