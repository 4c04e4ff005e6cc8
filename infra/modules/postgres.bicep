// PostgreSQL Flexible Servers: the tenants' primary (geo-redundant backup, control database), its read
// replica in the second region (promoted on regional failover), and the sandbox server that nightly
// validation restores into: VNet-integrated in an isolated delegated subnet, private access only.
param location string
param secondaryLocation string

param primaryName string
param replicaName string
param sandboxName string

@allowed([
  '14'
  '15'
  '16'
])
@description('Major version; the container image ships the same major of postgresql-client (Dockerfile).')
param postgresVersion string = '16'

param adminLogin string

@secure()
param adminPassword string

@secure()
param sandboxAdminPassword string

@description('General Purpose or Memory Optimized: read replicas need one of them.')
param serverSku string = 'Standard_D2ds_v5'
param serverTier string = 'GeneralPurpose'
param storageSizeGB int = 128

@allowed([
  'Disabled'
  'ZoneRedundant'
  'SameZone'
])
param highAvailability string = 'ZoneRedundant'

@minValue(7)
@maxValue(35)
param backupRetentionDays int = 35

param sandboxSku string = 'Standard_B2ms'
param sandboxTier string = 'Burstable'

@description('Delegated, isolated subnet of the sandbox server.')
param sandboxSubnetId string

@description('Private DNS zone (*.private.postgres.database.azure.com) of the sandbox server.')
param sandboxDnsZoneId string

@description('Database of the catalog, approvals and evidence index.')
param controlDatabase string = 'continuity_control'

param tags object = {}

resource primary 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: primaryName
  location: location
  tags: tags
  sku: {
    name: serverSku
    tier: serverTier
  }
  properties: {
    version: postgresVersion
    administratorLogin: adminLogin
    administratorLoginPassword: adminPassword
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Enabled'
      tenantId: subscription().tenantId
    }
    storage: {
      storageSizeGB: storageSizeGB
      autoGrow: 'Enabled'
    }
    backup: {
      backupRetentionDays: backupRetentionDays
      geoRedundantBackup: 'Enabled'
    }
    highAvailability: {
      mode: highAvailability
    }
    network: {
      // Reached through private endpoints only.
      publicNetworkAccess: 'Disabled'
    }
  }
}

resource control 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: primary
  name: controlDatabase
  properties: {
    charset: 'UTF8'
    collation: 'en_US.utf8'
  }
}

resource replica 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: replicaName
  location: secondaryLocation
  tags: tags
  sku: {
    name: serverSku
    tier: serverTier
  }
  properties: {
    createMode: 'Replica'
    sourceServerResourceId: primary.id
    // Read replicas: auto-grow must match the primary's, or the replica stops when the primary grows past it.
    storage: {
      storageSizeGB: storageSizeGB
      autoGrow: 'Enabled'
    }
    network: {
      publicNetworkAccess: 'Disabled'
    }
  }
  dependsOn: [
    control
  ]
}

resource sandbox 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: sandboxName
  location: location
  tags: tags
  sku: {
    name: sandboxSku
    tier: sandboxTier
  }
  properties: {
    version: postgresVersion
    administratorLogin: adminLogin
    administratorLoginPassword: sandboxAdminPassword
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Enabled'
      tenantId: subscription().tenantId
    }
    storage: {
      storageSizeGB: storageSizeGB
      autoGrow: 'Enabled'
    }
    // Throwaway restores: no geo copy, shortest retention.
    backup: {
      backupRetentionDays: 7
      geoRedundantBackup: 'Disabled'
    }
    highAvailability: {
      mode: 'Disabled'
    }
    network: {
      delegatedSubnetResourceId: sandboxSubnetId
      privateDnsZoneArmResourceId: sandboxDnsZoneId
      publicNetworkAccess: 'Disabled'
    }
  }
}

// The restore checks use amcheck (index and heap corruption) on the sandbox.
resource sandboxExtensions 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: sandbox
  name: 'azure.extensions'
  properties: {
    value: 'AMCHECK,PG_STAT_STATEMENTS'
    source: 'user-override'
  }
}

output primaryId string = primary.id
output primaryName string = primary.name
output primaryHost string = primary.properties.fullyQualifiedDomainName
output replicaId string = replica.id
output replicaName string = replica.name
output replicaHost string = replica.properties.fullyQualifiedDomainName
output sandboxId string = sandbox.id
output sandboxName string = sandbox.name
output sandboxHost string = sandbox.properties.fullyQualifiedDomainName
output controlDatabase string = control.name
