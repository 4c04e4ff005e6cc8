// Least-privilege access for the Function App's managed identity, each role scoped to the one resource
// it is needed on: blob data of the three app containers (not the account), the host storage the task
// hub lives in, reading secrets, sending to the outgoing topic, pulling the image, and a custom role
// for the Flexible Server operations of failover and sandbox restores (promote, PITR restore, delete).
@description('Object id of the Function App\'s user-assigned identity (granted before the app exists).')
param principalId string

@description('Name of that identity, for the PostgreSQL Entra admin.')
param principalName string

param backupStorageAccountName string
param dataContainers array
param hostStorageAccountName string
param vaultName string
param outgoingTopicName string
param registryName string
param primaryServerName string
param sandboxServerName string

var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
}

resource backupStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: backupStorageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: backupStorage
  name: 'default'
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for name in dataContainers: {
  parent: blobService
  name: name
}]

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostStorageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource outgoing 'Microsoft.EventGrid/topics@2024-06-01-preview' existing = {
  name: outgoingTopicName
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource primary 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' existing = {
  name: primaryServerName
}

resource sandbox 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' existing = {
  name: sandboxServerName
}

// Blob data owner (tags and immutability policies need it), per container, not on the account.
resource containerOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (name, i) in dataContainers: {
  name: guid(containers[i].id, principalId, roles.storageBlobDataOwner)
  scope: containers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

// The Functions host and the Durable task hub (Azure Storage provider): blobs, queues and tables.
resource hostBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, principalId, roles.storageBlobDataOwner)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource hostQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, principalId, roles.storageQueueDataContributor)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource hostTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, principalId, roles.storageTableDataContributor)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource topicSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(outgoing.id, principalId, roles.eventGridDataSender)
  scope: outgoing
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource imagePull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, principalId, roles.acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Only what failover and sandbox restores do through ARM; no generic Contributor.
resource flexibleServerOperator 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'continuity-flexible-server-operator')
  properties: {
    roleName: 'Continuity Flexible Server Operator (${resourceGroup().name})'
    description: 'Promote replicas, restore to a new server, fence (configure, stop, restart), delete scratch servers.'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: [
          'Microsoft.DBforPostgreSQL/flexibleServers/read'
          'Microsoft.DBforPostgreSQL/flexibleServers/write'
          'Microsoft.DBforPostgreSQL/flexibleServers/delete'
          'Microsoft.DBforPostgreSQL/flexibleServers/restart/action'
          'Microsoft.DBforPostgreSQL/flexibleServers/start/action'
          'Microsoft.DBforPostgreSQL/flexibleServers/stop/action'
          'Microsoft.DBforPostgreSQL/flexibleServers/replicas/read'
          'Microsoft.DBforPostgreSQL/flexibleServers/configurations/read'
          'Microsoft.DBforPostgreSQL/flexibleServers/configurations/write'
          'Microsoft.DBforPostgreSQL/flexibleServers/databases/read'
          'Microsoft.DBforPostgreSQL/flexibleServers/backups/read'
          'Microsoft.DBforPostgreSQL/locations/operationResults/read'
          'Microsoft.DBforPostgreSQL/locations/azureAsyncOperation/read'
          'Microsoft.Network/virtualNetworks/subnets/join/action'
          'Microsoft.Network/privateDnsZones/join/action'
          // Point-in-time-restore validation of a public-access primary: the restored server's own private
          // endpoint (auto-approved by this action on the server) and its DNS zone group, then their deletion.
          'Microsoft.DBforPostgreSQL/flexibleServers/privateEndpointConnectionsApproval/action'
          'Microsoft.Network/privateEndpoints/read'
          'Microsoft.Network/privateEndpoints/write'
          'Microsoft.Network/privateEndpoints/delete'
          'Microsoft.Network/privateEndpoints/privateDnsZoneGroups/read'
          'Microsoft.Network/privateEndpoints/privateDnsZoneGroups/write'
          'Microsoft.Network/locations/operations/read'
          'Microsoft.Network/locations/operationResults/read'
        ]
        notActions: []
      }
    ]
  }
}

resource serverOperator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, flexibleServerOperator.id)
  properties: {
    roleDefinitionId: flexibleServerOperator.id
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// The identity signs in to PostgreSQL with Entra ID tokens where the code supports it.
resource primaryAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = {
  parent: primary
  name: principalId
  properties: {
    principalType: 'ServicePrincipal'
    principalName: principalName
    tenantId: subscription().tenantId
  }
}

resource sandboxAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = {
  parent: sandbox
  name: principalId
  properties: {
    principalType: 'ServicePrincipal'
    principalName: principalName
    tenantId: subscription().tenantId
  }
}
